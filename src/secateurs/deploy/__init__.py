"""Deployment formats and runtimes together: ONNX export and onnxruntime sessions, CSR sparse
inference modules and files, the packed format of structured-sparse weights, and the exporter
registry (`secateurs.deploy.exporters`; modules named ``export_*`` register themselves).
"""
