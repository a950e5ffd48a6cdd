"""The fork server's preload for ``--executor dask-local``: Dask's worker code too.

Listed after :mod:`voxpipe.preload`. Each Dask worker process is forked from the fork
server and would otherwise import ``distributed`` itself on its way to its first case
(0.26 s here, with the collector off; more in a worker, where it is on). Importing it
starts no thread, so the fork server stays safe to fork from.
"""

from voxpipe.preload import import_frozen

import_frozen(("distributed", "distributed.nanny", "distributed.worker"))
