"""Daily sales of an ice-cream stand: loading, features and a small model."""
