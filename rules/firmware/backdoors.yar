// camwatch firmware rules: backdoor magic strings, authentication-bypass handlers, universal and
// hidden accounts, and post-exploitation leftovers in an image.
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_backdoor_001_hikvision_auth_magic
{
    meta:
        id = "CW-FW-BACKDOOR-001"
        severity = "critical"
        vendor = "hikvision"
        cve = "CVE-2017-7921"
        reference = "indicators.md HK-01; CISA KEV; ET Open sid 2026015"
        description = "Hikvision authentication-bypass magic token auth=YWRtaW46MTEK (Base64 of 'admin:11') built into the web server: unauthenticated access to configuration and snapshots"
        category = "backdoor"
        indicator = "HK-01"
        reliability = 90
    strings:
        $token = "YWRtaW46MTEK" ascii
    condition:
        $token
}

rule cw_backdoor_002_hikvision_poc_persistence
{
    meta:
        id = "CW-FW-BACKDOOR-002"
        severity = "critical"
        vendor = "hikvision"
        cve = "CVE-2021-36260"
        reference = "indicators.md HK-04; mcw0/PoC CVE-2021-36260.py"
        description = "Persistence left by the public CVE-2021-36260 exploit (extra uid-0 user 'P', dropbear on port 1337 with blank passwords): this image was tampered with"
        category = "backdoor"
        indicator = "HK-04"
        reliability = 90
    strings:
        $user = "echo -n P::0:0:W>N" ascii
        $ssh = "dropbear -R -B -p 1337" ascii
    condition:
        any of them
}

rule cw_backdoor_003_generic_backdoor_string
{
    meta:
        id = "CW-FW-BACKDOOR-003"
        severity = "medium"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-11 (FACT_core known_vulnerabilities BackDoor_String)"
        description = "The word 'backdoor' (plain, leet, reversed or Base64) in the image: weak hint, review the context"
        category = "backdoor"
        indicator = "GEN-11"
        reliability = 40
    strings:
        $plain = /b[a4]ckd[o0]{2}r/
        $reversed = /r[o0]{2}dkc[a4]b/
        $b64 = "YmFja2Rvb3I" ascii
    condition:
        any of them
}

rule cw_backdoor_004_dlink_roodkcab
{
    meta:
        id = "CW-FW-BACKDOOR-004"
        severity = "high"
        vendor = "d-link"
        cve = "CVE-2013-6026"
        reference = "indicators.md GEN-11 (FACT_core DLink_Bug)"
        description = "D-Link/Alphanetworks web-server backdoor User-Agent 'xmlset_roodkcableoj28840ybtide': authentication bypass"
        category = "backdoor"
        indicator = "GEN-11"
        reliability = 90
    strings:
        $ua = "xmlset_roodkcableoj28840ybtide" ascii
    condition:
        $ua
}

rule cw_backdoor_005_xiongmai_universal_password
{
    meta:
        id = "CW-FW-BACKDOOR-005"
        severity = "critical"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-03; tothi/pwn-hisilicon-dvr"
        description = "Xiongmai Sofia universal application password I0TO5Wv9 (or its Sofia hash k5c4xNGV): logs in as any user on every device"
        category = "backdoor"
        indicator = "XM-03"
        reliability = 90
    strings:
        $clear = "I0TO5Wv9" ascii
        $hash = "k5c4xNGV" ascii
    condition:
        any of them
}

rule cw_backdoor_006_xiongmai_hidden_account
{
    meta:
        id = "CW-FW-BACKDOOR-006"
        severity = "high"
        vendor = "xiongmai"
        cve = "CVE-2018-17919"
        reference = "indicators.md XM-05 (SEC Consult 2018, via NJCCIC)"
        description = "Xiongmai hidden account 'default' with password 'tluafed' (Sofia hash OxhlwSG8)"
        category = "backdoor"
        indicator = "XM-05"
        reliability = 90
    strings:
        $clear = "tluafed" ascii
        $hash = "OxhlwSG8" ascii
    condition:
        any of them
}

rule cw_backdoor_007_dahua_current_config
{
    meta:
        id = "CW-FW-BACKDOOR-007"
        severity = "high"
        vendor = "dahua"
        cve = "CVE-2017-7925,CVE-2017-7927"
        reference = "indicators.md DH-03, DH-04; mcw0/PoC dahua-backdoor.txt; Greenbone gb_dahua_auth_bypass_03_17.nasl"
        description = "Dahua web server serves /current_config (passwd, Account1): credential hashes can be downloaded and replayed (pass-the-hash)"
        category = "backdoor"
        indicator = "DH-04"
        reliability = 70
    strings:
        $passwd = "/current_config/passwd" ascii
        $account = "/current_config/Account1" ascii
        $alias = /alias[^\n\x00]{0,40}current_config/
    condition:
        any of them
}

rule cw_backdoor_008_dahua_old_dvr_bypass_versions
{
    meta:
        id = "CW-FW-BACKDOOR-008"
        severity = "high"
        vendor = "dahua"
        cve = "CVE-2013-6117"
        reference = "indicators.md DH-08 (unconfirmed, recalled from NVD)"
        description = "Dahua DVR firmware version 2.608.0000.0 / 2.608.GV00.0, affected by the TCP 37777 authentication bypass (low reliability)"
        category = "backdoor"
        indicator = "DH-08"
        reliability = 40
    strings:
        $v1 = "2.608.0000.0" ascii
        $v2 = "2.608.GV00.0" ascii
    condition:
        any of them
}

rule cw_backdoor_009_hikvision_exec_binary
{
    meta:
        id = "CW-FW-BACKDOOR-009"
        severity = "info"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-18"
        description = "Hikvision vendor command-execution helper execSystemCmd present"
        category = "backdoor"
        indicator = "HK-18"
        reliability = 90
    strings:
        $exec = "execSystemCmd" ascii
    condition:
        $exec
}
