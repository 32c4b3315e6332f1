"""The core: settings, the lake, the data contract, privacy, shared names and errors.

Every other package may import it; it imports none of them.
"""
