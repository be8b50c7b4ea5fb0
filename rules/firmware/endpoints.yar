// camwatch firmware rules: cloud, P2P, DDNS and platform endpoints baked into an image.
//
// These are inventory (info): they say where the device will phone home, which the traffic monitor
// can then compare with what it sees. Upgrade servers carry role cloud_upgrade (see upgrade.yar).
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_endpoint_001_hikvision_cloud
{
    meta:
        id = "CW-FW-ENDPOINT-001"
        severity = "info"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-16; camera-network.md 1.1"
        description = "Hikvision / EZVIZ cloud, DDNS or NTP endpoint baked in (Hik-Connect, EZVIZ, ys7, HiDDNS)"
        category = "endpoint"
        indicator = "HK-16"
        reliability = 90
    strings:
        $h1 = "hik-connect.com" ascii
        $h2 = "ezvizlife.com" ascii
        $h3 = "ezviz7.com" ascii
        $h4 = "devlog.ys7.com" ascii
        $h5 = "time.ys7.com" ascii
        $h6 = "www.hik-online.com" ascii
        $h7 = "www.hiddns.com" ascii
    condition:
        any of them
}

rule cw_endpoint_002_hikvision_platform_config
{
    meta:
        id = "CW-FW-ENDPOINT-002"
        severity = "info"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-17 (ISAPI EZVIZ / Ehome platform access, HiDDNS provider)"
        description = "Hikvision cloud/platform access configuration (EZVIZ, Ehome/ISUP, HiDDNS)"
        category = "endpoint"
        indicator = "HK-17"
        reliability = 80
    strings:
        $ezviz = "/ISAPI/System/Network/EZVIZ" ascii
        $ehome = "/ISAPI/System/Network/Ehome" ascii
        $ddns = "<provider>HiDDNS</provider>" ascii
    condition:
        any of them
}

rule cw_endpoint_003_dahua_cloud
{
    meta:
        id = "CW-FW-ENDPOINT-003"
        severity = "info"
        vendor = "dahua"
        cve = ""
        reference = "indicators.md DH-13; camera-network.md 1.2"
        description = "Dahua / Imou cloud, P2P or DDNS endpoint baked in (easy4ip, dahuap2pcloud, dahuaddns, lechange, imoulife)"
        category = "endpoint"
        indicator = "DH-13"
        reliability = 90
    strings:
        $d1 = "easy4ipcloud.com" ascii
        $d2 = "www.dahuap2pcloud.com" ascii
        $d3 = "www.easy4ip.com" ascii
        $d4 = "openapi.easy4ip.com" ascii
        $d5 = "www.dahuaddns.com" ascii
        $d6 = "openapi.lechange.cn" ascii
        $d7 = "lechange.com" ascii
        $d8 = "imoulife.com" ascii
    condition:
        any of them
}

rule cw_endpoint_004_dahua_p2p_config
{
    meta:
        id = "CW-FW-ENDPOINT-004"
        severity = "info"
        vendor = "dahua"
        cve = ""
        reference = "indicators.md DH-12 (T2UServer, VSP_PaaS, Amcrest.ConfigAddress)"
        description = "Dahua cloud/P2P enablement keys (T2UServer, VSP_PaaS, Amcrest.ConfigAddress)"
        category = "endpoint"
        indicator = "DH-12"
        reliability = 80
    strings:
        $t2u = "T2UServer" ascii
        $paas = "VSP_PaaS" ascii
        $amcrest = "Amcrest.ConfigAddress" ascii
    condition:
        any of them
}

rule cw_endpoint_005_xiongmai_cloud
{
    meta:
        id = "CW-FW-ENDPOINT-005"
        severity = "info"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-14, XM-15, XM-17"
        description = "Xiongmai / XMeye cloud, P2P or push endpoint baked in (secu100.net, xmeye.net, xmcsrv.net, bcloud365.net, umeye.cn)"
        category = "endpoint"
        indicator = "XM-14"
        reliability = 90
    strings:
        $x1 = /(caps|pub-cfg|mac|access-dss|pub-status|pub-dss-hls)\.secu100\.net/
        $x2 = ".xmeye.net" ascii
        $x3 = ".xmcsrv.net" ascii
        $x4 = "rds-viot.bcloud365.net" ascii
        $x5 = "push.umeye.cn" ascii
        $x6 = /"Addr"[ \t]*:[ \t]*"secu100\.net"/
        $x7 = /MSG_(DSS_CFG_QUERY_REQ|PMS_CFG_QUERY_REQ|XM_DNS_MULTIQUERY_REQ|DEV_REGISTER_REQ|AGENT_REGISTER_REQ)/
    condition:
        any of them
}

rule cw_endpoint_006_hardcoded_public_dns
{
    meta:
        id = "CW-FW-ENDPOINT-006"
        severity = "low"
        vendor = "xiongmai"
        cve = ""
        reference = "indicators.md XM-16 (114.114.114.114 and 8.8.8.8 bypass the DHCP resolver)"
        description = "Hard-coded public DNS resolver (114.114.114.114 / 8.8.8.8): lookups bypass the local resolver and its logging"
        category = "endpoint"
        indicator = "XM-16"
        reliability = 60
    strings:
        $cn = /(^|[^0-9.])114\.114\.114\.114([^0-9.]|$)/
        $g = /(^|[^0-9.])8\.8\.8\.8([^0-9.]|$)/
    condition:
        $cn or ($g and uint32(0) == 0x464c457f)
}

rule cw_endpoint_007_third_party_ddns
{
    meta:
        id = "CW-FW-ENDPOINT-007"
        severity = "info"
        vendor = "hisilicon-oem"
        cve = ""
        reference = "indicators.md GEN-12 (encoder in binwalk tests/inputs/zip.bin)"
        description = "Third-party DDNS service baked in (88safce.com, 9299.org)"
        category = "endpoint"
        indicator = "GEN-12"
        reliability = 80
    strings:
        $a = "www.88safce.com" ascii
        $b = "www.9299.org" ascii
    condition:
        any of them
}
