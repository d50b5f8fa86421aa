//! f16 storage.
