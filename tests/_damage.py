"""Damage a checkpoint on disk, as a failing disk or a stray write would."""

from pathlib import Path


def flip_a_bit(step_dir: Path) -> None:
    """Flip one bit in the middle of the largest array file of an orbax checkpoint step."""
    largest = max(
        (path for path in (step_dir / "state").rglob("*") if path.is_file()),
        key=lambda path: path.stat().st_size,
    )
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0x10
    largest.write_bytes(bytes(data))
