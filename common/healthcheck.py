"""berth-healthcheck: placeholder replaced by the deploy helper."""


def main() -> None:
    raise SystemExit(2)
