# tests/bench/summarize.awk: runs.txt (one key=value line per run, written by
# run.sh) -> markdown tables of medians [min..max] per target and scenario,
# with the ratios of each saslgate variant to nginx (CPU: lower is better;
# rate: higher is better; memory: lower is better).
function med(key,   n, i, j, t, a) {
	n = split(V[key], a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	MIN = a[1]; MAX = a[n]; CNT = n
	if (n == 0) return ""
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function cell(key, fmt,   m) {
	m = med(key)
	if (m == "") return "-"
	if (CNT == 1) return sprintf(fmt, m)
	return sprintf(fmt " [" fmt ".." fmt "]", m, MIN, MAX)
}
function ratio(a, b) { return (a == "" || b == "" || b + 0 == 0) ? "-" : sprintf("%.2fx", a / b) }
{
	t = ""; s = ""
	for (i = 1; i <= NF; i++) {
		p = index($i, "="); if (!p) continue
		k = substr($i, 1, p - 1); v = substr($i, p + 1)
		if (k == "target") t = v; else if (k == "scen") s = v
		F[k] = v
	}
	if (t == "" || s == "") next
	if (!((t, s) in SEEN)) { SEEN[t, s] = 1; ORDER[++NO] = t SUBSEP s }
	if (!(t in TSEEN)) { TSEEN[t] = 1; TORD[++NT] = t }
	if (!(s in SSEEN)) { SSEEN[s] = 1; SORD[++NS] = s }
	for (k in F) V[t, s, k] = ((t, s, k) in V ? V[t, s, k] " " : "") F[k]
	if (s == "S5") S5LINE = $0
	delete F
}
END {
	print "| scenario | target | ok / fail | msgs/s | MB/s | server CPU ms/msg | p50 ms | p99 ms | CPU/msg vs nginx | msgs/s vs nginx |"
	print "|---|---|---|---|---|---|---|---|---|---|"
	for (si = 1; si <= NS; si++) {
		s = SORD[si]
		if (s ~ /^S4/ || s == "S5") continue
		ncpu = med("nginx" SUBSEP s SUBSEP "srv_ms_per_msg"); nrate = med("nginx" SUBSEP s SUBSEP "msgs_per_s")
		for (ti = 1; ti <= NT; ti++) {
			t = TORD[ti]; b = t SUBSEP s SUBSEP
			if (!((t, s) in SEEN)) continue
			okm = med(b "ok"); fm = med(b "fail")
			cpu = med(b "srv_ms_per_msg"); rate = med(b "msgs_per_s")
			printf "| %s | %s | %s / %s | %s | %s | %s | %s | %s | %s | %s |\n", s, t, okm, fm,
				cell(b "msgs_per_s", "%.0f"), cell(b "MBps", "%.1f"), cell(b "srv_ms_per_msg", "%.3f"),
				cell(b "p50_ms", "%.1f"), cell(b "p99_ms", "%.1f"),
				t == "nginx" ? "1" : ratio(cpu, ncpu), t == "nginx" ? "1" : ratio(rate, nrate)
		}
	}
	hdr = 0
	for (si = 1; si <= NS; si++) {
		s = SORD[si]
		if (s !~ /^S4/) continue
		if (!hdr++) {
			print ""
			print "| scenario | target | idle sessions established / alive after hold | setup s | PSS KiB/session | RSS KiB/session | PSS vs nginx |"
			print "|---|---|---|---|---|---|---|"
		}
		npss = med("nginx" SUBSEP "S4" SUBSEP "pss_kib_per_conn")
		for (ti = 1; ti <= NT; ti++) {
			t = TORD[ti]; b = t SUBSEP s SUBSEP
			if (!((t, s) in SEEN)) continue
			pss = med(b "pss_kib_per_conn")
			printf "| %s | %s | %s / %s | %s | %s | %s | %s |\n", s, t, med(b "established"), med(b "alive_after_hold"),
				cell(b "setup_secs", "%.1f"), cell(b "pss_kib_per_conn", "%.1f"), cell(b "rss_kib_per_conn", "%.1f"),
				t == "nginx" ? "1" : ratio(pss, npss)
		}
	}
	if (S5LINE != "") {
		n = split(S5LINE, f, " ")
		for (i = 1; i <= n; i++) { p = index(f[i], "="); G[substr(f[i], 1, p - 1)] = substr(f[i], p + 1) }
		print ""
		printf "S5: one %.0f MiB message through saslgate: ok=%s, %s MB/s, byte-exact at the upstream: %s; saslgate RSS %d KiB before, peak %d KiB while it passed: growth %d KiB (%.2f MiB)\n",
			G["msg_bytes"] / 1048576, G["ok"], G["MBps"], G["byte_exact"],
			G["rss_base_kib"], G["rss_peak_kib"], G["rss_growth_kib"], G["rss_growth_kib"] / 1024
	}
}
