//! An AWX-compatible automation controller API simulator for tests and demos.
