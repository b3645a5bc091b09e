"""An async client for AUTOMATIC1111/Forge/SD.Next servers run with `--api`, a pool that
spreads jobs over several of them, and a local emulator.

Imports nothing from Discord or the rest of the project: it could be published alone.
"""
