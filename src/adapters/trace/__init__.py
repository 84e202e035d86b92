"""Storage traces (.lct): the recorder, the reader, and the replay of recorded calls."""
