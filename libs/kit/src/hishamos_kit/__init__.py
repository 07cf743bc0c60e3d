"""The HishamOS service chassis: what every service needs, written once."""
