"""HishamOS projects service."""
