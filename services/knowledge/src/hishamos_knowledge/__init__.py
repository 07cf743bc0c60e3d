"""HishamOS knowledge service."""
