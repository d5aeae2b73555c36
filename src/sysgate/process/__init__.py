"""Putting a filter on a process: this one (:mod:`.install`), a new child with delayed activation
(:mod:`.launch`, whose ``spawn`` is the one launcher), from a stored filter (:mod:`.filter`), and
running a command supervised until it is done (:mod:`.run`). Imports go one way:
install <- launch <- filter <- run."""
