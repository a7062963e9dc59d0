"""The stages, in the order a build runs them: sample, locate, dedupe, capture, ocr, segment,
describe, qc, write. Each is plain code over `corebuild.record.Record`; `stage.py` is their one
interface and runner, `registry.py` how a stage names its backends (docs/architecture.md)."""
