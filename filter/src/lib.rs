//! keygate edge filter (placeholder).
