"""Verification: parse traces into thought and solution, check final answers, curate and export."""
