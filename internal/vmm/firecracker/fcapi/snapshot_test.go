package fcapi

// The snapshot bodies are checked against the specification like the rest
// (TestFieldsFollowSpec).
func init() {
	definitions["SnapshotCreateParams"] = SnapshotCreateParams{}
	definitions["MemoryBackend"] = MemoryBackend{}
	definitions["NetworkOverride"] = NetworkOverride{}
	definitions["VsockOverride"] = VsockOverride{}
	definitions["SnapshotLoadParams"] = SnapshotLoadParams{}
}
