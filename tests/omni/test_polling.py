"""The adaptive poll schedule: slow while queued, converging on the predicted finish."""

from omni.models import Progress, TaskStatus
from omni.polling import FIXED_HALF_SECOND, PollPolicy

POLICY = PollPolicy()


def progress(status: TaskStatus, eta: float) -> Progress:
    return Progress("t", status, 0.5, eta, (), (), "", None)


def test_queued_without_estimate_backs_off_to_a_ceiling():
    delay = POLICY.first_delay
    seen = []
    for _ in range(10):
        delay = POLICY.next_delay(progress(TaskStatus.QUEUED, 0), delay)
        seen.append(delay)
    assert seen == sorted(seen)
    assert seen[-1] == POLICY.max_queued_interval


def test_long_running_tasks_sleep_a_share_of_the_time_left_capped():
    assert POLICY.next_delay(progress(TaskStatus.RUNNING, 60), 1) == POLICY.max_running_interval
    assert POLICY.next_delay(progress(TaskStatus.RUNNING, 5), 1) == 2.5


def test_near_the_end_it_aims_just_past_the_predicted_finish():
    delay = POLICY.next_delay(progress(TaskStatus.RUNNING, 1.2), 1)
    assert delay == 1.2 + POLICY.finish_margin


def test_running_past_the_estimate_polls_soon_and_backs_off_gently():
    first = POLICY.next_delay(progress(TaskStatus.RUNNING, 0), 0.25)
    later = POLICY.next_delay(progress(TaskStatus.RUNNING, 0), 1.9)
    assert first < 0.5
    assert later == POLICY.stale_max_interval


def test_the_sdk_schedule_is_always_half_a_second():
    for status in (TaskStatus.QUEUED, TaskStatus.RUNNING):
        for eta in (0, 0.3, 5, 100):
            assert FIXED_HALF_SECOND.next_delay(progress(status, eta), 0.5) == 0.5
