"""Feed filters: each drops candidates the user must not see (bought, served, excluded, out of stock...)."""
