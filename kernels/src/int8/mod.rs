//! int8.
