"""The bundled sample capture (camera_vlan.pcap), written by agent.samplegen; see its docstring."""
