# The bot, on a slim Python base, as a non-root user. Settings come from the environment
# (docker run --env-file .env ...); nothing secret is baked into the image.
#
#   docker build -t sdxl-imagine .
#   docker volume create sdxl-data
#   docker run -d --name sdxl-imagine --restart unless-stopped \
#       --env-file .env -v sdxl-data:/app/data sdxl-imagine
#
# Use a named volume for /app/data: Docker fills a new named volume from the image, so it
# belongs to the `bot` user below. A bind mount such as `-v $PWD/data:/app/data` belongs to
# the host user instead, and SQLite then cannot create data/bot.db (the bot exits with code 2).
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

# Healthy = the bot process is still PID 1 and, with the default SQLite database, the file
# opens read-only and holds the schema the bot writes at start (so it got through opening and
# migrating its database). With DATABASE_URL=postgresql://... only the process is checked.
# It does not prove the Discord connection. Cheap: no network, no writes.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 CMD \
    python -c "import os, sqlite3, sys; \
cmd = open('/proc/1/cmdline', 'rb').read().split(b'\0'); \
sys.exit(1) if b'bot.py' not in cmd else None; \
url = os.environ.get('DATABASE_URL') or 'sqlite:///data/bot.db'; \
sys.exit(0) if not url.startswith('sqlite://') else None; \
db = sqlite3.connect('file:' + url.removeprefix('sqlite://').removeprefix('/') + '?mode=ro', uri=True); \
db.execute('SELECT MAX(version) FROM schema_migrations').fetchone()"

CMD ["python", "bot.py"]
