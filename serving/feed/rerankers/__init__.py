"""Feed re-rankers: reorder the scored candidates for the page (diversity across categories and sellers)."""
