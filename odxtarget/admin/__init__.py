"""Administration of a running daemon: a control socket, typed operations, and ``odxtargetcli``.

* ``protocol`` -- the JSON-lines wire format of the control socket (docs/admin.md);
* ``ops``      -- one typed operation per change or query; validates with ``parse_config``;
* ``live``     -- applies a validated configuration change to the running objects;
* ``odx``      -- what the ``/odx`` node shows (limits, tokens, counters) from the copy manager;
* ``saving``   -- saveconfig / restoreconfig / clearconfig, with dated backups;
* ``server``   -- the daemon side of the control socket;
* ``client``   -- the blocking client the shell (and scripts) use;
* ``shell``    -- the configshell-fb tree behind ``odxtargetcli``.
"""
