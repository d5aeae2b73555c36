"""Putting a filter on a process: this one (:mod:`.install`), a new child with delayed activation
(:mod:`.launch`), from a stored filter (:mod:`.filter`)."""
