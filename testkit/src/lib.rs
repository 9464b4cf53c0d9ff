//! placeholder until the stand-in moves here
