"""HishamOS agents service."""
