"""The parts the cogs use, built once at start and shared (the cogs hold no state of their own
that matters across a restart)."""

from __future__ import annotations

from dataclasses import dataclass

from clock import Clock
from jobs.backend import Backend
from jobs.intake import Intake
from jobs.runner import JobRunner
from jobs.store import JobStore
from quota.moderation import Moderation
from settings import Settings
from sharing.gallery import Gallery
from storage import Database


@dataclass
class Services:
    settings: Settings
    clock: Clock
    db: Database
    backend: Backend
    jobs: JobStore
    intake: Intake
    runner: JobRunner
    moderation: Moderation
    gallery: Gallery
