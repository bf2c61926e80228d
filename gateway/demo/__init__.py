"""Demo models for trying the gateway end to end; built by `gateway models build-demo`.

Nothing here is imported by the server. Import `gateway.demo.digits` explicitly: it pulls in
scikit-learn, and torch and onnx when building.
"""
