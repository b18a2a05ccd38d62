"""The client side: the user's files (``files``) and a store over HTTP (``remote``).

Nothing here imports the control plane or SQLAlchemy: a remote command pays
only for HTTP and hashing, and the import-rule test keeps it so.
"""
