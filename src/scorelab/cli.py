"""Command-line interface (placeholder until the CLI issue lands)."""


def main() -> None:
    raise SystemExit("scorelab CLI: not yet available")
