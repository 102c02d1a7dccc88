"""Small helpers with no model or data logic (atomic file writes)."""
