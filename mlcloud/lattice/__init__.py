"""The lattice: NATS subjects, the RPC wire format, links, events and the control interface."""
