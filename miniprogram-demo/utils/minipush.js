// minipush client library (to be written).
