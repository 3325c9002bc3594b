"""A small to-do list: a store and a command-line interface."""
