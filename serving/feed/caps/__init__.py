"""Caps: after scoring, keep each group's best-scored candidates and hold back the rest, saying so."""
