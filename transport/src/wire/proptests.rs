//! Property tests of the wire format (written by a helper).
