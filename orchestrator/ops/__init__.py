"""Operations that keep runs moving: the reconciler, beat, deadlines, delays and metrics."""
