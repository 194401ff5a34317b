"""What the tests share: the recording fake GitHub, the fault-injection kit, the IAM-enforcement
harness, and where things are."""
