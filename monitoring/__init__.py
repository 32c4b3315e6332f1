"""Monitoring: Evidently drift reports that decide when the champion must be retrained."""
