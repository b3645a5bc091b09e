"""What the bot keeps per member, apart from their jobs: their `/imagine` defaults."""
