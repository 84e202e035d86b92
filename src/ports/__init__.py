"""Interfaces (typing.Protocol) the domain needs from the outside world."""
