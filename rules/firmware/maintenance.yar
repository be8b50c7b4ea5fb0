// camwatch firmware rules: vendor maintenance / debug backdoors (Xiongmai 9530 and 9527, XM535
// debug shell, QVIS interDebug) and the process names that carry them.
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_maint_001_xiongmai_9530_telnet_enable
{
    meta:
        id = "CW-FW-MAINT-001"
        severity = "critical"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-06; tothi/hs-dvr-telnet; https://habr.com/en/post/486856/"
        description = "Xiongmai port-9530 telnet-enable backdoor: a network client can switch telnet on with a fixed key (2wj9fsa2)"
        category = "backdoor"
        indicator = "XM-06"
        reliability = 90
    strings:
        $open = "OpenTelnet:OpenOnce" ascii
        $key = "2wj9fsa2" ascii
    condition:
        // verify:OK / randNum: alone are too generic to count; the trigger or the key is enough
        $key or $open
}

rule cw_maint_002_xiongmai_9527_console
{
    meta:
        id = "CW-FW-MAINT-002"
        severity = "high"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-07; tothi/pwn-hisilicon-dvr"
        description = "Xiongmai/HiSilicon DVR application console on TCP 9527 (login line 'login(user, ******, Console, ...)'): a shell-like console over the network"
        category = "backdoor"
        indicator = "XM-07"
        reliability = 60
    strings:
        $login = /login\([^,\n\x00]{1,32}, ?[^,\n\x00]{1,32}, ?Console/
    condition:
        $login
}

rule cw_maint_003_xm535_debug_shell
{
    meta:
        id = "CW-FW-MAINT-003"
        severity = "high"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-08; kkrzysztofik/Anyka_ak3918_hacking_journey (XM535 write-up)"
        description = "XM535 debug-shell hooks (TelnetDebugOpen, OPTelnetControl, LibXmDvr_Debug_*): telnet/debug access can be opened through the vendor protocol"
        category = "backdoor"
        indicator = "XM-08"
        reliability = 80
    strings:
        $a1 = "OPTelnetControl" ascii
        $a2 = "OnTelnetControl" ascii
        $a3 = "TelnetDebugOpen" ascii
        $a4 = "TelnetDebugClose" ascii
        $a5 = "Ability.TelnetDebugMode" ascii
        $a6 = "/var/NetIPTokenInfo" ascii
        $a7 = "/var/netiptelnetdebug.txt" ascii
        $a8 = "LibXmDvr_Debug_open" ascii
        $a9 = "LibXmDvr_Debug_setDefaultPasswd" ascii
        $a10 = "Listening at port %d for debug." ascii
    condition:
        2 of them
}

rule cw_maint_004_qvis_interdebug
{
    meta:
        id = "CW-FW-MAINT-004"
        severity = "high"
        vendor = "hisilicon-oem"
        cve = ""
        reference = "indicators.md XM-21 (unconfirmed public qvtool snippet)"
        description = "QVIS debug trigger 'killall -USR1 interDebug' opens the TCP 9527 debug console"
        category = "backdoor"
        indicator = "XM-21"
        reliability = 50
    strings:
        $trigger = /killall[ \t]+-(USR1|SIGUSR1|10)[ \t]+interDebug/
    condition:
        $trigger
}

rule cw_maint_005_xiongmai_startup_hook
{
    meta:
        id = "CW-FW-MAINT-005"
        severity = "info"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-10"
        description = "Xiongmai custom start-up hook (/mnt/custom/extapp.sh) or dvrHelper watchdog: review what the hook runs"
        category = "backdoor"
        indicator = "XM-10"
        reliability = 80
    strings:
        $extapp = "/mnt/custom/extapp.sh" ascii
        $helper = /dvrHelper[ \t][^\n\x00]{0,80}127\.0\.0\.1[ \t]+9578/
    condition:
        any of them
}

rule cw_maint_006_backdoor_carrier_names
{
    meta:
        id = "CW-FW-MAINT-006"
        severity = "info"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md GEN-05 (dvrHelper, macGuarder, dvrbox, telnetctrl, interDebug)"
        description = "Process name of a known maintenance-backdoor carrier (dvrHelper, macGuarder, dvrbox, telnetctrl, interDebug)"
        category = "backdoor"
        indicator = "GEN-05"
        reliability = 60
    strings:
        $names = /\b(dvrHelper|macGuarder|dvrbox|telnetctrl|interDebug)\b/
    condition:
        $names
}
