# The bot, on a slim Python base, as a non-root user. Settings come from the environment
# (docker run --env-file .env ...); nothing secret is baked into the image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 10001 bot && mkdir -p /app/data && chown bot /app/data
COPY --chown=bot . .
USER bot

VOLUME ["/app/data"]
CMD ["python", "bot.py"]
