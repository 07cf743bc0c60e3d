"""HishamOS identity service."""
