"""Contracts between the project's two environments: records one side writes and the other
reads, defined once in standard-library Python both can import (``docs/architecture.md``)."""
