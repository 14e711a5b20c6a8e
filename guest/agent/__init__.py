"""Grove guest agent: runs commands, shells and files inside the VM for the engine.

Stdlib only: the guest ships python3 from Debian (json, dataclasses from the full stdlib;
ctypes is optional, used for the subreaper and reboot(2)). One concept per module:
``transport`` (virtio-serial port or test socket), ``loop`` (epoll reactor), ``server``
(handshake, channels, dispatch, outbound queue), ``flow`` (credit windows), ``process`` (exec
and PTY sessions), ``system`` (sysinfo, identity after a fork, power), ``files`` (transfer and
manifests), ``services`` (readiness probes, terminal signals).

Ops (CTRL JSON on a fresh channel; errors are ``{"ok": false, "code": ..., "error": ...}``)::

  hello (channel 0)  {"op":"hello","version":1,"nonce":N}
                     -> {"op":"hello","ok":true,"version":1,"agent","pid","hostname","boot_id",
                         "nonce":N,"sessions":[{"channel","kind","pid","argv0","pty","state",
                         "exit"}]}   or {"op":"hello","ok":false,"code":"version",...}
  ping               -> {"ok":true}
  exec               {"argv","env"?,"cwd"?,"timeout_s"?,"stdin"?,"pty"?,"rows"?,"cols"?,"term"?}
                     -> {"ok":true,"pid"}, DATA 1/2 under credit, then
                        {"event":"exit","exit_code","signal","timed_out","duration_ms"}
                     errors: not_found, bad_cwd, permission_denied, exec_failed, bad_request
  attach (on the session's own channel) -> {"ok":true,"pid","attached":true}, then as exec
  signal             {"target_channel","signal":"INT|TERM|HUP|KILL|QUIT|USR1|USR2|STOP|CONT|WINCH"}
  pty_resize         {"target_channel","rows","cols"}
  sysinfo            -> {"hostname","uptime_s","mem_total_kib","mem_available_kib","load",
                         "boot_id","time_ns","kernel","cpus","agent"}
  restore_identity   {"entropy_b64","time_ns","hostname"}
                     -> {"ok":true,"reseeded":true,"clock_step_ms","hostname","dry_run"}
                     or {"ok":false,"code":"reseed_failed"|"clock_failed"|"hostname_failed"}
  sync               -> {"ok":true,"duration_ms"}
  shutdown           {"reboot"?} -> {"ok":true,"poweroff":bool}, then sync and power off
  file_read          {"path","offset"?,"length"?} -> {"ok":true,"size","mode","mtime_ns"},
                     DATA 1, {"event":"eof","bytes","sha256"}
  file_write         {"path","mode"?,"append"?,"mkdirs"?} -> {"ok":true}; DATA 0 from the
                     engine, empty DATA 0 = EOF -> {"event":"done","bytes","sha256"}
  fs_manifest        {"path","hash"?,"exclude"?,"one_file_system"?} -> {"ok":true},
                     {"event":"entries","entries":[...]}..., {"event":"done","count","errors"}
  probe              {"kind":"file|tcp|http","target","timeout_ms"?}
                     -> {"ok":true,"ready":bool,"error"}   (services: readiness checks)
  pty_signal         {"target_channel","signal"} -> {"ok":true,"pgid"}: to the terminal's
                     foreground process group, as ^C would

Unsolicited on channel 0: ``{"event":"agent_started","pid"}`` (first connection of a new agent
process) and ``{"event":"desync"}`` (a bad frame header; input is ignored until the next hello).
"""

VERSION = "0.1.0"
