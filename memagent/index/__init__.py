"""Write path: sessions into values (decompose) and values into keys (keys)."""
