//! Sample files of the per-city layout, shared by the parsers' tests and the ingest's.

/// A finished mayor race, in the authority's compact `"k" : "v"` spacing: a coalition with a
/// vice, a federation party, a lone party, and a candidate annulled sub judice.
pub const MAYOR: &str = r#"{ "ele" : "9426", "t" : "1", "f" : "s", "sup" : "n", "tpabr" : "mu", "cdabr" : "99001", "dg" : "01/10/2028", "hg" : "21:00:05", "idg" : "700001", "dt" : "01/10/2028", "ht" : "20:59:58", "dv" : "s", "tf" : "s", "and" : "f", "md" : "s", "carg" : [
{ "cd" : "11", "nmn" : "Prefeito", "nv" : "1", "fed" : [
{ "n" : "101", "sg" : "FXA", "nm" : "FEDERAÇÃO EXEMPLO", "com" : "PXC/PXF", "npar" : [ "13", "43" ] } ], "agr" : [
{ "n" : "1", "nm" : "UNIDOS PELA VILA", "tp" : "c", "com" : "PXA / PXB", "par" : [
{ "n" : "45", "sg" : "PXA", "nm" : "PARTIDO XA", "nfed" : "", "tvtn" : "5200", "cand" : [
{ "n" : "45", "sqcand" : "9001", "nm" : "ANA PRIMEIRA DA SILVA", "nmu" : "ANA PRIMEIRA", "seq" : "2", "dvt" : "Válido", "e" : "s", "st" : "Eleito", "vap" : "5200", "pvap" : "52,00", "vs" : [
{ "tp" : "v", "sqcand" : "9002", "nm" : "ROBERTO VICE", "nmu" : "BETO VICE", "sgp" : "PXB" } ] } ] } ] },
{ "n" : "2", "nm" : "PARTIDO XC", "tp" : "i", "com" : "PXC", "par" : [
{ "n" : "13", "sg" : "PXC", "nm" : "PARTIDO XC", "nfed" : "101", "tvtn" : "4300", "cand" : [
{ "n" : "13", "sqcand" : "9003", "nm" : "CARLOS SEGUNDO", "nmu" : "CARLOS SEGUNDO", "seq" : "1", "dvt" : "Válido", "e" : "n", "st" : "Não eleito", "vap" : "4300", "pvap" : "43,00", "vs" : [
{ "tp" : "v", "sqcand" : "9004", "nm" : "DIANA VICE", "nmu" : "", "sgp" : "PXF" } ] } ] } ] },
{ "n" : "3", "nm" : "PARTIDO XD", "tp" : "i", "com" : "PXD", "par" : [
{ "n" : "77", "sg" : "PXD", "nfed" : "", "tvtn" : "500", "cand" : [
{ "n" : "77", "sqcand" : "9005", "nm" : "DORA TERCEIRA", "nmu" : "DORA", "seq" : "3", "dvt" : "Válido", "e" : "n", "st" : "Não eleito", "vap" : "500", "pvap" : "" } ] } ] },
{ "n" : "4", "nm" : "PARTIDO XE", "tp" : "i", "com" : "PXE", "par" : [
{ "n" : "22", "sg" : "PXE", "nfed" : "", "tvtn" : "0", "cand" : [
{ "n" : "22", "sqcand" : "9006", "nm" : "EDU ANULADO", "nmu" : "EDU", "seq" : "4", "dvt" : "Anulado sub judice", "e" : "n", "st" : "", "vap" : "300", "pvap" : "0,00" } ] } ] } ] } ],
"s" : { "ts" : "40", "st" : "40", "pst" : "100,00", "snt" : "0" },
"e" : { "te" : "13000", "c" : "11000", "pc" : "84,62", "a" : "2000", "pa" : "15,38" },
"v" : { "tv" : "11000", "vvc" : "10300", "vv" : "10000", "vnom" : "10000", "van" : "0", "vansj" : "300", "vb" : "400", "tvn" : "300", "vn" : "280", "vnt" : "20" } }"#;

/// A councillor race with list votes, every councillor status, a federation and an annulled
/// candidate.
pub const COUNCIL: &str = r#"{"ele":"9426","t":"1","tpabr":"mu","cdabr":"99001","idg":"700002",
      "dt":"01/10/2028","ht":"20:59:58","tf":"s","and":"f",
      "carg":[{"cd":"13","nmn":"Vereador","nv":"9",
        "fed":[{"n":"101","sg":"FXA","nm":"FEDERAÇÃO EXEMPLO","npar":["13","43"]}],
        "agr":[
          {"nm":"PARTIDO XA","tp":"i","par":[{"n":"45","sg":"PXA","nfed":"","dvt":"Válido (legenda)",
            "tvtn":"1450","tvtl":"150","cand":[
              {"n":"45001","nmu":"ALFA","dvt":"Válido","e":"s","st":"Eleito por QP","vap":"900","pvap":"36,73"},
              {"n":"45002","nmu":"BRAVO","dvt":"Válido","e":"s","st":"Eleito por média","vap":"450","pvap":"18,37"},
              {"n":"45003","nmu":"CHARLIE","dvt":"Válido","e":"n","st":"Suplente","vap":"100","pvap":"4,08"}]}]},
          {"nm":"PARTIDO XC","tp":"i","par":[{"n":"13","sg":"PXC","nfed":"101","dvt":"Válido (legenda)",
            "tvtn":"750","tvtl":"100","cand":[
              {"n":"13001","nmu":"DELTA","dvt":"Válido","e":"s","st":"Eleito por QP","vap":"700","pvap":"28,57"},
              {"n":"13002","nmu":"ECHO","dvt":"Válido","e":"n","st":"Não eleito","vap":"50","pvap":"2,04"},
              {"n":"13003","nmu":"FOXTROT","dvt":"Anulado","e":"n","st":"","vap":"80","pvap":""}]}]}]}],
      "s":{"ts":"12","st":"12","pst":"100,00"},
      "e":{"te":"3500","c":"2900","a":"600"},
      "v":{"tv":"2900","vvc":"2530","vv":"2450","vnom":"2200","vl":"250","van":"80","vansj":"0",
           "vb":"200","tvn":"170","vn":"170","vnt":"0"}}"#;

/// The same mayor race before the count starts: zeros everywhere, in upper case.
pub const ZEROS: &str = r#"{"ele":"9426","t":"1","f":"S","tpabr":"MU","cdabr":"99001","idg":"700000",
      "dg":"01/10/2028","hg":"16:00:00","dt":"","ht":"","tf":"N","and":"P","md":"N",
      "carg":[{"cd":"11","nmn":"Prefeito","nv":"1","agr":[
        {"nm":"UNIDOS PELA VILA","tp":"C","par":[{"n":"45","sg":"PXA","tvtn":"0","cand":[
          {"n":"45","nmu":"ANA PRIMEIRA","dvt":"VÁLIDO","e":"N","st":"","vap":"0","pvap":"0,00"}]}]},
        {"nm":"PARTIDO XC","tp":"I","par":[{"n":"13","sg":"PXC","tvtn":"0","cand":[
          {"n":"13","nmu":"CARLOS SEGUNDO","dvt":"VÁLIDO","e":"N","st":"","vap":"0","pvap":"0,00"}]}]}]}],
      "s":{"ts":"40","st":"0","pst":"0,00"},
      "e":{"te":"13000","c":"0","a":"0"},
      "v":{"tv":"0","vvc":"0","vv":"0","vnom":"0","van":"0","vansj":"0","vb":"0","tvn":"0","vn":"0","vnt":"0"}}"#;
