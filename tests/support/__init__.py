"""What the tests share: databases, servers, clients, test data, attacks."""

from pathlib import Path

# The top of the repository.
ROOT = Path(__file__).parents[2]
