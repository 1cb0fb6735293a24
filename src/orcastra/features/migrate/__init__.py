"""``orcastra migrate``: moving the earlier tool's anchor labels and constraints to Orcastra's (``plan``)."""
