// camwatch firmware rules: update paths, network/cloud upgrade handlers, reflash channels and
// update-signing artefacts.
//
// Roles (meta `role`) feed the inspector's correlations:
//   network_upgrade / cloud_upgrade  an upgrade can be triggered over the network (GEN-08);
//   upgrade_path                     code that writes an update (GEN-09);
//   signature                        some signature verification exists (GEN-09 counter-evidence).
// Meta fields: see docs/writing-rules.md. Catalogue IDs: shared/reference/indicators.md.

rule cw_upgrade_001_web_upgrade_handler
{
    meta:
        id = "CW-FW-UPGRADE-001"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-08 (wifidaemon: POST /upgrade_firmware.cgi; encoder: CgiUpgradeFirmWare), DH-10, HK-12, XM-12"
        description = "Firmware can be uploaded over the network (upgrade CGI / ISAPI updateFirmware / DVRIP OPSystemUpgrade)"
        category = "upgrade"
        indicator = "GEN-08"
        role = "network_upgrade"
        reliability = 80
    strings:
        $cgi1 = "upgrade_firmware.cgi" ascii
        $cgi2 = "upgrade_htmls.cgi" ascii
        $cgi3 = "CgiUpgradeFirmWare" ascii
        $dh = "/cgi-bin/upgrade.cgi" ascii
        $hik = "/ISAPI/System/updateFirmware" ascii
        $xm = "OPSystemUpgrade" ascii
    condition:
        any of them
}

rule cw_upgrade_002_dahua_cloud_upgrade
{
    meta:
        id = "CW-FW-UPGRADE-002"
        severity = "info"
        vendor = "dahua"
        cve = ""
        reference = "indicators.md DH-11 (api/CloudUpgrader/check, CloudUpgrade, updateSerialCloudUpgrade)"
        description = "Dahua cloud-upgrade hook: the device can fetch and install firmware from the vendor cloud"
        category = "upgrade"
        indicator = "DH-11"
        role = "cloud_upgrade"
        reliability = 80
    strings:
        $api = "api/CloudUpgrader/check" ascii
        $serial = "updateSerialCloudUpgrade" ascii
        $cfg = /"(CloudUpgrade|AutoUpgrade)"[ \t]*:/
    condition:
        any of them
}

rule cw_upgrade_003_hikvision_online_upgrade
{
    meta:
        id = "CW-FW-UPGRADE-003"
        severity = "info"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-13 (/ISAPI/System/onlineUpgrade/...)"
        description = "Hikvision online (cloud) upgrade actions: the device can download and install firmware from the vendor"
        category = "upgrade"
        indicator = "HK-13"
        role = "cloud_upgrade"
        reliability = 80
    strings:
        $online = "/ISAPI/System/onlineUpgrade" ascii
        $download = "onlineUpgrade/downloadPackage" ascii
        $direct = "onlineUpgrade/upgradeWithoutDownload" ascii
    condition:
        any of them
}

rule cw_upgrade_004_xiongmai_online_upgrade
{
    meta:
        id = "CW-FW-UPGRADE-004"
        severity = "info"
        vendor = "xiongmai"
        cve = "CVE-2018-17915"
        reference = "indicators.md XM-13, XM-15 (NetWork.OnlineUpgrade, AutoUpgradeImp; cleartext POST /list update check)"
        description = "Xiongmai online-upgrade configuration: the device checks the XMeye cloud for updates in cleartext and can install them"
        category = "upgrade"
        indicator = "XM-15"
        role = "cloud_upgrade"
        reliability = 80
    strings:
        $cfg = "NetWork.OnlineUpgrade" ascii
        $imp = "AutoUpgradeImp" ascii
        $srv = "upgrade.secu100.net" ascii
    condition:
        any of them
}

rule cw_upgrade_005_dahua_tftp_reflash_magic
{
    meta:
        id = "CW-FW-UPGRADE-005"
        severity = "medium"
        vendor = "dahua"
        cve = ""
        reference = "indicators.md DH-09; firmware-formats.md 3.5 (ipcamtalk Dahua Firmware Mod Kit thread, page 14)"
        description = "Dahua bootloader network reflash channel: U-Boot fetches upgrade_info_7db780a713a4.txt by TFTP from 192.168.254.254 and runs its commands"
        category = "upgrade"
        indicator = "DH-09"
        role = "network_upgrade"
        reliability = 80
    strings:
        $file = "upgrade_info_7db780a713a4.txt" ascii
        $magic = "c016dcd6-cdeb-45df-9fd0-e821bf0e1e62" ascii
    condition:
        any of them
}

rule cw_upgrade_006_hikvision_tftp_recovery
{
    meta:
        id = "CW-FW-UPGRADE-006"
        severity = "info"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-14 (U-Boot prompt 'HKVS #', TFTP recovery 192.0.0.64 <-> 192.0.0.128)"
        description = "Hikvision bootloader with the TFTP recovery reflash (anyone on the LAN segment at 192.0.0.128 can reflash during boot)"
        category = "upgrade"
        indicator = "HK-14"
        reliability = 70
    strings:
        $prompt = "HKVS #" ascii
        $server = "192.0.0.128" ascii
    condition:
        $prompt or ($server and uint32(0) == 0x56190527)
}

rule cw_upgrade_007_hikvision_forgeable_signing_key
{
    meta:
        id = "CW-FW-UPGRADE-007"
        severity = "medium"
        vendor = "hikvision"
        cve = ""
        reference = "indicators.md HK-09; firmware-formats.md 2.8 (renaudallard/hikvision_R2_firmware hikfw.py)"
        description = "Hikvision upgrade 'signature' passphrase h@k8807H$Z5998 / salt HangZhou is public and the RSA check is a stub: images can be re-signed by anyone"
        category = "integrity"
        indicator = "HK-09"
        reliability = 80
    strings:
        // the salt "HangZhou" alone is an ordinary city name, so only the passphrase counts
        $pass = "h@k8807H$Z5998" ascii
    condition:
        $pass
}

rule cw_upgrade_008_update_code_path : silent
{
    meta:
        id = "CW-FW-UPGRADE-008"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-09 (upgrade code path strings)"
        description = "Signal: code that writes a firmware update (UpgradeFirmWare, updateFirmware, update_flash, flwrite, grade.sh)"
        category = "upgrade"
        indicator = "GEN-09"
        role = "upgrade_path"
        reliability = 70
    strings:
        $s1 = "UpgradeFirmWare" ascii
        $s2 = "updateFirmware" ascii
        $s3 = "update_flash" ascii
        $s4 = "upgrade_firmware" ascii
        $s5 = "upgrade_from_digicap" ascii
        $s6 = /grade\.sh[ \t]+-[fkrs]/
    condition:
        any of them
}

rule cw_upgrade_009_signature_verification : silent
{
    meta:
        id = "CW-FW-UPGRADE-009"
        severity = "info"
        vendor = "generic"
        cve = ""
        reference = "indicators.md GEN-09 (sign.img, PUBLIC KEY, RSA_verify, EVP_DigestVerify, mbedtls_pk_verify)"
        description = "Signal: signature verification code or a public key is present"
        category = "upgrade"
        indicator = "GEN-09"
        role = "signature"
        reliability = 70
    strings:
        $pub = "-----BEGIN PUBLIC KEY-----" ascii
        $rsa = "RSA_verify" ascii
        $evp = "EVP_DigestVerify" ascii
        $mbed = "mbedtls_pk_verify" ascii
        $sign = "sign.img" ascii
    condition:
        any of them
}
