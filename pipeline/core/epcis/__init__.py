"""GS1 EPCIS 2.0: documents and events, the official schema, the CBV 2.0 event hash, ShipmentEvent views.

Pure, like the rest of `core`: bytes and values in, values out; the vendored
GS1 schema and context are read from the package, never from the network.
"""
