// camwatch firmware rules: remote shells started at boot (telnet, dropbear, root consoles).
//
// These rules look for *launches*, not for the presence of a daemon: busybox carries a telnetd
// applet in almost every camera image, and that alone is not a finding. Script rules therefore
// skip ELF files and anchor on a line that starts the daemon.
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_telnet_001_boot_launch
{
    meta:
        id = "CW-FW-TELNET-001"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04 (bare telnetd line in system/init/ipcam.sh of binwalk tests/inputs/zip.bin)"
        description = "Init script starts telnetd unconditionally: a network root shell is listening after every boot"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 90
    strings:
        $launch = /(^|\n)[ \t]*(\/usr\/sbin\/|\/usr\/bin\/|\/bin\/|\/sbin\/|busybox[ \t]+)?telnetd([ \t&;\r\n]|$)/
    condition:
        $launch and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_002_inittab_telnetd
{
    meta:
        id = "CW-FW-TELNET-002"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04"
        description = "inittab entry runs telnetd at boot (respawn/sysinit/once): a network root shell is always available"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 90
    strings:
        $entry = /(^|\n)[^:\n#]{0,16}:[^:\n]{0,16}:(respawn|sysinit|once|wait|askfirst|boot):[^\n]{0,60}telnetd/
    condition:
        $entry and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_003_alternative_launcher
{
    meta:
        id = "CW-FW-TELNET-003"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04 (utelnetd, inetd telnet, /etc/init.d/telnet)"
        description = "Telnet started through an alternative launcher (utelnetd, an inetd.conf telnet line or the telnet init script)"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 80
    strings:
        $utelnetd = /(^|\n)[ \t]*([^ \t\n]{0,40}\/)?utelnetd([ \t&;\r\n]|$)/
        $inetd = /(^|\n)[ \t]*telnet[ \t]+stream[ \t]+tcp[46]?[ \t]+nowait/
        $initd = /(^|\n)[ \t]*\/etc\/init\.d\/[SK]?[0-9]{0,2}telnetd?[ \t]+start/
    condition:
        any of them and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_004_nonstandard_port
{
    meta:
        id = "CW-FW-TELNET-004"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04 (UTT /etc_ro/rcS telnetd on port 60023 'for telnet debugging', cha0yang1/UTT-nv810v4-telnet-backdoor)"
        description = "telnetd bound to a non-standard port: a hidden debug telnet that port scans of 23 will miss"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 80
    strings:
        $port = /telnetd[ \t]+([^\n\x00]{0,40}[ \t])?-p[ \t]*([0-9]{3,5}|[013-9][0-9]|2[0-24-9]|[0-9])([ \t&;\r\n\x00"']|$)/
    condition:
        $port
}

rule cw_telnet_005_conditional_launch
{
    meta:
        id = "CW-FW-TELNET-005"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04"
        description = "Script starts telnetd behind a condition (debug flag, factory mode...): check what sets the condition"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 70
    strings:
        $cond = /(&&|\|\||\bthen|\bdo|\belse)[ \t]+(\/usr\/sbin\/|\/bin\/|\/sbin\/|busybox[ \t]+)?telnetd([ \t&;\r\n]|$)/
    condition:
        $cond and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_006_shell_without_login
{
    meta:
        id = "CW-FW-TELNET-006"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04; busybox telnetd -l option"
        description = "telnetd runs a shell directly (-l /bin/sh): whoever connects gets a root shell without any password"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 90
    strings:
        $noauth = /telnetd[ \t]+([^\n\x00]{0,40}[ \t])?-l[ \t]*\/bin\/(ba|a|p)?sh/
    condition:
        $noauth
}

rule cw_telnet_007_binary_launch
{
    meta:
        id = "CW-FW-TELNET-007"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04, GEN-05"
        description = "Program holds a system()/popen() command that starts telnetd with options: telnet can be switched on at run time"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 60
    strings:
        // NUL-delimited command string with options or a trailing '&' (a bare applet name is not a launch)
        $cmd = /\x00[ \t]*(\/usr\/sbin\/|\/bin\/|\/sbin\/|busybox[ \t]+)?telnetd([ \t]+-[a-zA-Z][^\x00\n]{0,60}|[ \t]*&)[ \t]*\x00/
    condition:
        $cmd and uint32(0) == 0x464c457f
}

rule cw_telnet_008_dropbear_blank_passwords
{
    meta:
        id = "CW-FW-TELNET-008"
        severity = "high"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-04 (dropbear -B), HK-04, HK-11"
        description = "dropbear started with -B: SSH logins with a blank password are accepted"
        category = "telnet"
        indicator = "GEN-04"
        reliability = 90
    strings:
        $blank = /dropbear[ \t]+([^\n\x00]{0,60}[ \t])?-[a-zA-Z]{0,4}B/
    condition:
        $blank
}

rule cw_telnet_009_dropbear_launch
{
    meta:
        id = "CW-FW-TELNET-009"
        severity = "low"
        vendor = "generic"
        cve = ""
        reference = "indicators.md HK-11 (/sbin/dropbear -R -I 1800 in /etc/app)"
        description = "Init script starts an SSH daemon (dropbear) at boot; review who can log in"
        category = "telnet"
        indicator = "HK-11"
        reliability = 80
    strings:
        $launch = /(^|\n)[ \t]*([^ \t\n]{0,40}\/)?dropbear([ \t&;\r\n]|$)/
        $blank = /dropbear[ \t]+([^\n\x00]{0,60}[ \t])?-[a-zA-Z]{0,4}B/
    condition:
        $launch and not $blank and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_010_root_console
{
    meta:
        id = "CW-FW-TELNET-010"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md XM-09 (getty -L ttyS000 115200 vt100 -n root), GEN-04"
        description = "Serial console logs in as root without a password (getty -n root / -l /bin/sh); needs physical UART access"
        category = "telnet"
        indicator = "XM-09"
        reliability = 90
    strings:
        $autologin = /::respawn:[^\n]{0,80}getty[^\n]{0,80}[ \t]-n[ \t]+root/
        $shell = /::respawn:[^\n]{0,80}getty[^\n]{0,80}[ \t]-l[ \t]*\/bin\/(ba|a)?sh/
    condition:
        any of them and not (uint32(0) == 0x464c457f)
}

rule cw_telnet_011_isapi_telnet_toggle
{
    meta:
        id = "CW-FW-TELNET-011"
        severity = "low"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-10 (PUT /ISAPI/System/Network/telnetd)"
        description = "Firmware exposes the ISAPI telnet switch: an administrator (or a stolen admin session) can enable telnet remotely"
        category = "telnet"
        indicator = "HK-10"
        reliability = 80
    strings:
        $isapi = "/ISAPI/System/Network/telnetd"
    condition:
        $isapi
}
